"""Static dashboard assets (HTML, CSS, JavaScript); moelens.viz writes the data it reads."""
