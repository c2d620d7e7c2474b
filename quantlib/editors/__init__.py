"""Graph editors: the framework (base, patterns) and every editor, grouped by stage."""

from quantlib.editors.base import (
    Annotator,
    ApplicationPoint,
    Applier,
    ComposedEditor,
    Editor,
    Finder,
    Retracer,
    Rewriter,
)

__all__ = ["Annotator", "ApplicationPoint", "Applier", "ComposedEditor", "Editor", "Finder", "Retracer", "Rewriter"]
