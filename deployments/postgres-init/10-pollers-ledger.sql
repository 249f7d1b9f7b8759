-- Run by the postgres image on its first start (an empty data volume): the database
-- of prefect-pollers' ledger, beside Prefect's own (PREFECT_POLLERS_LEDGER_URL).
CREATE DATABASE pollers_ledger OWNER prefect;
