"""Command-line programs of netmem, installed as ``netmem.tools``."""
