-- A DSO store of schema version 2 as dso-server db36134 wrote it (sqlite-utils), with one household,
-- VEN, event, response and allocation run: opened by a newer server it must migrate, losing nothing.
PRAGMA user_version = 2;
BEGIN TRANSACTION;
CREATE TABLE "allocation_events" (
   "connection_point_id" TEXT REFERENCES "households"("connection_point_id"),
   "kind" TEXT,
   "event_id" TEXT NOT NULL REFERENCES "signals"("event_id"),
   "updated_at" TEXT NOT NULL,
   PRIMARY KEY ("connection_point_id", "kind")
);
CREATE TABLE "allocation_runs" (
   "run_id" TEXT PRIMARY KEY,
   "kind" TEXT NOT NULL,
   "day" TEXT,
   "window_start" TEXT NOT NULL,
   "window_end" TEXT NOT NULL,
   "publication_id" TEXT,
   "run_at" TEXT NOT NULL,
   "summary" TEXT NOT NULL
);
INSERT INTO "allocation_runs" VALUES('run-9f375bfa57f746b3','firm','2030-01-01','2030-01-01T12:00:00.000000+00:00','2030-01-01T13:00:00.000000+00:00',NULL,'2030-01-01T12:00:00.000000+00:00','{"households": 1}');
CREATE TABLE "comfort" (
   "connection_point_id" TEXT REFERENCES "households"("connection_point_id"),
   "measured_at" TEXT,
   "status" TEXT NOT NULL,
   "received_at" TEXT NOT NULL,
   PRIMARY KEY ("connection_point_id", "measured_at")
);
CREATE TABLE "deliveries" (
   "ven_id" TEXT PRIMARY KEY REFERENCES "vens"("ven_id"),
   "delivered" TEXT NOT NULL,
   "delivered_at" TEXT NOT NULL
);
CREATE TABLE "forecasts" (
   "transformer_id" TEXT,
   "interval_start" TEXT,
   "kind" TEXT,
   "p10_kw" REAL NOT NULL,
   "p50_kw" REAL NOT NULL,
   "p90_kw" REAL NOT NULL,
   "made_at" TEXT NOT NULL,
   PRIMARY KEY ("transformer_id", "interval_start", "kind")
);
CREATE TABLE "grid_connection_points" (
   "ean" TEXT PRIMARY KEY REFERENCES "households"("connection_point_id"),
   "position" INTEGER NOT NULL,
   "feeder_id" TEXT NOT NULL REFERENCES "grid_feeders"("id"),
   "node_id" TEXT REFERENCES "grid_nodes"("id"),
   "contracted_max_import_kw" REAL NOT NULL,
   "contracted_max_export_kw" REAL NOT NULL,
   "controllable_devices" INTEGER NOT NULL,
   "guaranteed_kw_per_device" REAL NOT NULL,
   "annual_kwh" REAL NOT NULL
);
CREATE TABLE "grid_feeders" (
   "id" TEXT PRIMARY KEY,
   "position" INTEGER NOT NULL,
   "transformer_id" TEXT NOT NULL REFERENCES "grid_transformers"("id")
);
CREATE TABLE "grid_lines" (
   "id" TEXT PRIMARY KEY,
   "position" INTEGER NOT NULL,
   "from_node" TEXT NOT NULL REFERENCES "grid_nodes"("id"),
   "to_node" TEXT NOT NULL REFERENCES "grid_nodes"("id"),
   "r_ohm" REAL NOT NULL,
   "x_ohm" REAL NOT NULL,
   "c_nf" REAL NOT NULL,
   "i_max_a" REAL NOT NULL
);
CREATE TABLE "grid_meta" (
   "key" TEXT PRIMARY KEY,
   "value" TEXT NOT NULL
);
CREATE TABLE "grid_nodes" (
   "id" TEXT PRIMARY KEY,
   "position" INTEGER NOT NULL,
   "transformer_id" TEXT NOT NULL REFERENCES "grid_transformers"("id"),
   "u_rated_kv" REAL NOT NULL
);
CREATE TABLE "grid_transformers" (
   "id" TEXT PRIMARY KEY,
   "position" INTEGER NOT NULL,
   "rating_kva" REAL NOT NULL,
   "power_factor" REAL NOT NULL,
   "safety_margin" REAL NOT NULL,
   "busbar_node" TEXT,
   "u1_kv" REAL NOT NULL,
   "u2_kv" REAL NOT NULL,
   "uk_percent" REAL NOT NULL,
   "pk_kw" REAL NOT NULL
);
CREATE TABLE "households" (
   "connection_point_id" TEXT PRIMARY KEY,
   "group_name" TEXT,
   "contract" TEXT NOT NULL,
   "updated_at" TEXT NOT NULL
);
INSERT INTO "households" VALUES('871687120000000011','feeder-1','{"connection_point_id":"871687120000000011","contracted_max_import_kw":17.0,"contracted_max_export_kw":10.0,"failsafe_import_kw":4.2,"failsafe_export_kw":4.2,"failsafe_duration_s":7200,"comfort":{"indoor_setpoint_c":20.0,"temperature_band_k":1.0,"ev_departure_local":"06:00:00","ev_required_range_km":150.0,"timezone":"Europe/Amsterdam"}}','2030-01-01T12:00:00.000000+00:00');
CREATE TABLE "plans" (
   "connection_point_id" TEXT REFERENCES "households"("connection_point_id"),
   "created_at" TEXT,
   "plan" TEXT NOT NULL,
   "received_at" TEXT NOT NULL,
   PRIMARY KEY ("connection_point_id", "created_at")
);
CREATE TABLE "report_offers" (
   "ven_id" TEXT REFERENCES "vens"("ven_id"),
   "report_specifier_id" TEXT,
   "report_name" TEXT,
   "r_ids" TEXT NOT NULL,
   "offered_at" TEXT NOT NULL,
   PRIMARY KEY ("ven_id", "report_specifier_id")
);
CREATE TABLE "report_requests" (
   "report_request_id" TEXT PRIMARY KEY,
   "ven_id" TEXT NOT NULL REFERENCES "vens"("ven_id"),
   "report_specifier_id" TEXT NOT NULL,
   "requested_at" TEXT NOT NULL
);
CREATE TABLE "responses" (
   "id" INTEGER PRIMARY KEY,
   "ven_id" TEXT NOT NULL REFERENCES "vens"("ven_id"),
   "event_id" TEXT NOT NULL REFERENCES "signals"("event_id"),
   "modification_number" INTEGER,
   "opt_type" TEXT NOT NULL,
   "response_code" INTEGER,
   "response_description" TEXT,
   "received_at" TEXT NOT NULL
);
INSERT INTO "responses" VALUES(1,'ven-3219e941f25543d2','ev-7d5bb3fd060144f0',0,'optIn',200,'OK','2030-01-01T12:00:00.000000+00:00');
CREATE TABLE "signals" (
   "event_id" TEXT PRIMARY KEY,
   "connection_point_id" TEXT NOT NULL REFERENCES "households"("connection_point_id"),
   "kind" TEXT NOT NULL,
   "payload" TEXT NOT NULL,
   "modification_number" INTEGER NOT NULL,
   "created_at" TEXT NOT NULL,
   "modified_at" TEXT NOT NULL,
   "cancelled" INTEGER NOT NULL,
   "publication_id" TEXT NOT NULL,
   "start_at" TEXT NOT NULL,
   "end_at" TEXT NOT NULL
);
INSERT INTO "signals" VALUES('ev-7d5bb3fd060144f0','871687120000000011','bandwidth','{"intervals":[{"start":"2030-01-01T13:00:00Z","import_limit_kw":5.0,"export_limit_kw":5.0}],"firmness":"firm"}',0,'2030-01-01T12:00:00.000000+00:00','2030-01-01T12:00:00.000000+00:00',0,'pub-2675c417ba8243f2','2030-01-01T13:00:00.000000+00:00','2030-01-01T13:15:00.000000+00:00');
CREATE TABLE "telemetry" (
   "connection_point_id" TEXT REFERENCES "households"("connection_point_id"),
   "interval_start" TEXT,
   "import_kw" REAL NOT NULL,
   "export_kw" REAL NOT NULL,
   "received_at" TEXT NOT NULL,
   PRIMARY KEY ("connection_point_id", "interval_start")
);
CREATE TABLE "vens" (
   "ven_id" TEXT PRIMARY KEY,
   "ven_name" TEXT NOT NULL,
   "registration_id" TEXT,
   "connection_point_id" TEXT NOT NULL REFERENCES "households"("connection_point_id"),
   "registered_at" TEXT NOT NULL,
   "last_seen_at" TEXT,
   "fingerprint" TEXT
);
INSERT INTO "vens" VALUES('ven-3219e941f25543d2','871687120000000011','reg-78cbe51973f44c08','871687120000000011','2030-01-01T12:00:00.000000+00:00','2030-01-01T12:00:00.000000+00:00',NULL);
CREATE UNIQUE INDEX "idx_vens_ven_name"
    ON "vens" ("ven_name");
CREATE UNIQUE INDEX "idx_vens_connection_point_id"
    ON "vens" ("connection_point_id");
CREATE INDEX "idx_signals_connection_point_id_end_at"
    ON "signals" ("connection_point_id", "end_at");
CREATE INDEX "idx_signals_publication_id"
    ON "signals" ("publication_id");
CREATE INDEX "idx_responses_event_id"
    ON "responses" ("event_id");
CREATE INDEX "idx_responses_ven_id_event_id_modification_number"
    ON "responses" ("ven_id", "event_id", "modification_number");
CREATE INDEX "idx_telemetry_interval_start"
    ON "telemetry" ("interval_start");
CREATE INDEX "idx_grid_connection_points_feeder_id"
    ON "grid_connection_points" ("feeder_id");
CREATE INDEX "idx_allocation_runs_kind_day"
    ON "allocation_runs" ("kind", "day");
COMMIT;
