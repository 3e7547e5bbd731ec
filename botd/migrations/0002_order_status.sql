-- 0002: the order life cycle of docs/design.md §4.3 (placed → confirmed → delivering → delivered,
-- or cancelled) and the time a customer cancelled. Applied in one transaction by `botd migrate`.
-- The old CHECK goes first so that 'new' rows can become 'placed'; the new CHECK is added after
-- the rewrite, so it validates every row.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;

UPDATE orders SET status = 'placed' WHERE status = 'new';

ALTER TABLE orders
    ALTER COLUMN status SET DEFAULT 'placed',
    ADD CONSTRAINT orders_status_check
        CHECK (status IN ('placed', 'confirmed', 'delivering', 'delivered', 'cancelled')),
    ADD COLUMN cancelled_at timestamptz;

-- Orders cancelled before this migration: their last change is the best known cancel time.
UPDATE orders SET cancelled_at = updated_at WHERE status = 'cancelled';
