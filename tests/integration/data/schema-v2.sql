-- A cloud-mode database at schema version 2 (PRAGMA user_version = 2), for
-- tests/integration/test_durable.py: made by aviaryctl built from the commit before
-- schema version 3 (instance create demo; token create demo --label fixture-key;
-- token create demo --label filtered --pub 'sensors/#' --sub 'sensors/#'; instance
-- create legacy; instance set legacy max-retained 50; token create legacy --label
-- legacy-key), then dumped with `sqlite3 DB .dump`. legacy's serial was then set to 0,
-- as step 2 left every instance made before it. sqlite3's .dump leaves out
-- user_version, which is set at the end by hand.
--
-- The tokens' secrets (keys, which never expire):
--   demo   fixture-key  i2g7iaBn0RV2m-VgBmNn4JPu0a7beqVrbpVnWRZO5wY
--   demo   filtered     uZJmUgVqFLPZIfHA5sY4KR9TK7exbcDKgvNJPFEIznk
--   legacy legacy-key   ZlB33V-RfOlb1h6Fnimh2V0iMF-GCWS-WzY38sHC4hs
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE plans (  name TEXT PRIMARY KEY NOT NULL);
INSERT INTO plans VALUES('default');
CREATE TABLE plan_limits (  plan TEXT NOT NULL REFERENCES plans(name) ON DELETE CASCADE,  name TEXT NOT NULL,  value INTEGER NOT NULL CHECK (value >= 0),  PRIMARY KEY (plan, name));
INSERT INTO plan_limits VALUES('default','max-connections',100);
INSERT INTO plan_limits VALUES('default','max-messages-per-second',100);
INSERT INTO plan_limits VALUES('default','max-retained',1000);
INSERT INTO plan_limits VALUES('default','idle-timeout',3600);
INSERT INTO plan_limits VALUES('default','max-sessions',1000);
INSERT INTO plan_limits VALUES('default','max-instance-bytes',67108864);
CREATE TABLE instances (  name TEXT PRIMARY KEY NOT NULL,  plan TEXT NOT NULL REFERENCES plans(name),  created INTEGER NOT NULL, serial INTEGER NOT NULL DEFAULT 0);
INSERT INTO instances VALUES('demo','default',1796394498,3329301361920705913);
INSERT INTO instances VALUES('legacy','default',1796394498,0);
CREATE TABLE instance_limits (  instance TEXT NOT NULL REFERENCES instances(name) ON DELETE CASCADE,  name TEXT NOT NULL,  value INTEGER NOT NULL CHECK (value >= 0),  PRIMARY KEY (instance, name));
INSERT INTO instance_limits VALUES('legacy','max-retained',50);
CREATE TABLE tokens (  id TEXT PRIMARY KEY NOT NULL,  instance TEXT NOT NULL REFERENCES instances(name) ON DELETE CASCADE,  label TEXT NOT NULL DEFAULT '',  secret_hash BLOB NOT NULL UNIQUE CHECK (length(secret_hash) = 32),  created INTEGER NOT NULL,  expires INTEGER,  client_id TEXT,  revoked INTEGER NOT NULL DEFAULT 0);
INSERT INTO tokens VALUES('e0b0927b3f863318','demo','fixture-key',X'eea51d77c4e61ede65878a7a1effb09ad2e2f79ba8051ffa4c031bc452f088dc',1796394498,NULL,NULL,0);
INSERT INTO tokens VALUES('0d7c4a0bc728b1a2','demo','filtered',X'f7990efb87b97f5e4c7c52fa109a656c2e116d3e38ae37ce5221c1d619aef529',1796394498,NULL,NULL,0);
INSERT INTO tokens VALUES('69116dd2cd2253a3','legacy','legacy-key',X'85e00e9772cc62f1cb8c9fca0abf8a4097ce5c01ccd1c0975625e57ffeb2b315',1796394498,NULL,NULL,0);
CREATE TABLE token_filters (  token TEXT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,  kind TEXT NOT NULL CHECK (kind IN ('pub', 'sub', 'deny-pub', 'deny-sub')),  filter TEXT NOT NULL,  position INTEGER NOT NULL,  PRIMARY KEY (token, kind, position));
INSERT INTO token_filters VALUES('0d7c4a0bc728b1a2','pub','sensors/#',0);
INSERT INTO token_filters VALUES('0d7c4a0bc728b1a2','sub','sensors/#',0);
CREATE INDEX instances_plan ON instances(plan);
CREATE INDEX tokens_instance ON tokens(instance);
COMMIT;
PRAGMA user_version=2;
