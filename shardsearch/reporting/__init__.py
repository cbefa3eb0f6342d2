"""The pieces of ``shardsearch.report``: units and tables, the notation's legend, the
verdict in words, the alternatives a plan is compared with, and the plot.

numpy only (matplotlib for the plot, imported when a plot is drawn); no jax."""
