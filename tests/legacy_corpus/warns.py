import warnings

warnings.warn("this hook is deprecated", DeprecationWarning)
warnings.warn("check your config")
print("warned")
