"""NeTI-style Time and View Mappers, and their checkpoints."""

from .checkpoint import LoadedMappers, load_mappers, save_mappers
from .neti import FourierEncoding, MapperConfig, NetiMapper, TimeMapper, ViewMapper, build_mapper

__all__ = ["FourierEncoding", "LoadedMappers", "MapperConfig", "NetiMapper", "TimeMapper", "ViewMapper", "build_mapper", "load_mappers", "save_mappers"]
