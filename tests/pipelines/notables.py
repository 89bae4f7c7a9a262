"""A module that imports fine but defines no DataJoint tables."""

ANSWER = 42
