"""Everything that turns a window into a score: extractors, the rater, and the runtimes they run on."""
