"""Generated wire contracts of Flame. Do not edit."""
