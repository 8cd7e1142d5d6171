"""Test boards: stand-ins for remote devices that hilas drives over ssh."""
