import os
import sys

# Tests import the PyTorch reference (tests/torch_aulunet.py) by module name.
sys.path.insert(0, os.path.dirname(__file__))
