"""The ground: config fields with their rules, presets, data contracts, atomic files."""
