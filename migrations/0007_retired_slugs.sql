-- A slug an app gave up by renaming stays that app's: by-name URLs (`/api/run/{app}/…`)
-- that third parties hold can never start running another app's code. The app may take
-- its old slug back; deleting the app frees it.
CREATE TABLE retired_slugs (
    slug       text        PRIMARY KEY,
    app_id     uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    retired_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX retired_slugs_app_idx ON retired_slugs (app_id);
