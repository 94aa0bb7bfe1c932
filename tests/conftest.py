"""Shared fixtures. The throwaway PostgreSQL fixture lives here (section below)."""

# --- PostgreSQL fixture (owned by the loader work) ---
