-- The fleet service keeps its store in its own database beside MLflow's.
CREATE DATABASE fleet;
