-- Claims take each app's due rows in turn (one app's flood must not starve another's
-- triggers): the claim walks the apps that have rows and, per app, its oldest due rows.
CREATE INDEX outbox_app_due_idx ON outbox (app_id, due_at);
