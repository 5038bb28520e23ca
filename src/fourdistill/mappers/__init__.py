"""NeTI-style Time and View Mappers."""

from .neti import FourierEncoding, MapperConfig, NetiMapper, TimeMapper, ViewMapper, build_mapper

__all__ = ["FourierEncoding", "MapperConfig", "NetiMapper", "TimeMapper", "ViewMapper", "build_mapper"]
