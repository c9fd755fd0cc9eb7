-- Whether a user's email address may receive alert email. Users the operator created (`cueapi keys
-- create`) or who registered from the server's own machine are taken as verified; one who
-- registered while registration was open to anyone is not, and is never emailed (the
-- notification is recorded as skipped with the reason), so an open server cannot be made to
-- mail addresses nobody vouched for.
ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 1;
