CREATE TABLE IF NOT EXISTS orders (
  id TEXT PRIMARY KEY,
  customer TEXT NOT NULL,
  total_cents BIGINT NOT NULL CHECK (total_cents > 0)
);
