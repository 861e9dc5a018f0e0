"""Service: the FastAPI REST service that schedules and reports studies."""

#: the distribution this code is installed as (pyproject.toml's name, not the command's):
#: the API reports its version
DISTRIBUTION = "magma-optim"
