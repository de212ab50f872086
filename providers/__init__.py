"""Built-in memory providers, installed as ``netmem.providers``."""
