"""`groundswell-ops`: what an operator needs during a surge, from any machine that can reach
Kafka, PostgreSQL and the services. Data layer (cluster, database, health, reading) apart from
pure rules (lag, masking) apart from rendering and the command line."""
