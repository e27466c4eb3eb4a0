from groundswell_counter.main import main

main()
