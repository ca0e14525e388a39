"""sinolc-dist: national 1 m land-cover inference as a resumable cluster job."""

__version__ = "0.1.0"
