-- usage_user_hourly (0015) answers every per-user panel the by-user projection of usage_hourly
-- (0011) served, keyed by user too: the projection is a second copy of usage_hourly that every
-- insert paid for, and nothing reads it any more.
ALTER TABLE {db}.usage_hourly DROP PROJECTION IF EXISTS by_user;
