import os

print("project", os.environ.get("CLAUDE_PROJECT_DIR"))
print("mode", os.getenv("HOOK_MODE", "default"))
print("legacy flag", os.environ.get("HOOKOPT_RUNNING_LEGACY"))
print("pwd", os.environ.get("PWD"), os.getcwd())
