import json

import hookopt_definitely_not_installed  # noqa: F401

print(json.dumps({"never": True}))
