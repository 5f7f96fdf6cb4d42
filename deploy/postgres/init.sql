-- Runs once, when the Postgres volume is new. The analysts' role gets its grants from migration 0002;
-- Grafana logs in as a member of it, so its dashboards can read trends and alerts and nothing else.
CREATE ROLE finsentry_analyst NOLOGIN;
CREATE ROLE grafana LOGIN PASSWORD 'grafana' IN ROLE finsentry_analyst;
