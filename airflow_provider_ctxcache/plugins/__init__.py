"""Airflow plugins shipped with the provider: the live-caches view (:mod:`.caches_view`)."""
