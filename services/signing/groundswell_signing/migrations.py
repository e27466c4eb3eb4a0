from groundswell_runtime.db import migrations_from_package
from groundswell_runtime.outbox import outbox_migration

MIGRATIONS = [outbox_migration(), *migrations_from_package("groundswell_signing.adapters")]
