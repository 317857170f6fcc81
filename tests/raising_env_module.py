"""An env module that raises while it is imported (``--env raising_env_module:Any-v0``):
the researcher needs the traceback of their own code (test_envs)."""


def load_settings() -> dict:
    return {"gravity": float("nine point eight")}


SETTINGS = load_settings()
