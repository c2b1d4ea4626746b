"""Stages of a run (compress → … → package), each callable alone and restartable from saved artifacts."""
