"""Built-in trick plugins, one module each; every module registers its trick with ``@register_trick``."""
