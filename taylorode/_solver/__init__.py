from .taylor import Taylor as Taylor
