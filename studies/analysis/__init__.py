"""Pure analyses of a study's trials and metrics: records in, plain dataclasses out."""
