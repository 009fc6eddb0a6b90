"""kubemta-common: code shared by the four kubemta services."""
