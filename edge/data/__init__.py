"""The dataset layer: item schema, validation, streaming readers and statistics."""

from globmed_edge.data.schema import ChatItem, Item, MCQItem, Problem, parse_item

__all__ = ["ChatItem", "Item", "MCQItem", "Problem", "parse_item"]
