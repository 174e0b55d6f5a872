"""grlab's own mutation check: semantic mutants of the loss core that the test suite must kill.

``mutants.py`` lists them (each a bug a peer has shipped or a careless edit would make);
``run.py`` applies them one at a time to a copy of the source tree and runs the relevant tests.
"""
