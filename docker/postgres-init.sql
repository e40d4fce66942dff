-- The databases `optiflow stack up` creates (optiflow/stack.py DATABASES); run once on a fresh volume.
CREATE DATABASE mlflow;
CREATE DATABASE optuna;
CREATE DATABASE prefect;
