from .jorba_zou import TaylorController as TaylorController
