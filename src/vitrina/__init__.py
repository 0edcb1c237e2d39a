"""vitrina: recommender systems end to end.

Layers depend one way: ``data`` <- ``models`` / ``metrics`` <- ``evaluation`` <- ``serving`` /
``experiments``; ``cli`` sits on top.
"""

__version__ = "0.1.0"
