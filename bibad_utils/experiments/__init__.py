"""Experiment helpers of the stage notebooks: the tables and figures each chapter shows."""
