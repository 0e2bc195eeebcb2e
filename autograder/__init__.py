"""InterpLab's instructor side: build, grade, verify, store (imports as ``interplab.autograder``)."""
