-- 0003: every change of an order's status, kept as history and sent on as events
-- (docs/design.md §4.3, §3.10).
--
-- A row is written in the same transaction as the change it records (the insert of the order,
-- a customer's cancel, the shop's `botd orders set-status`), so no change can happen without
-- its event, and no event without its change. `published_at` is NULL until botd's relay has
-- handed the event (confirmed) to RabbitMQ, from where it becomes a Chat2Desk note, a signed
-- webhook to the shop and, for some changes, a message to the customer. `event_id` is the id
-- the shop's receiver dedupes on.
CREATE TABLE order_events (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid        NOT NULL DEFAULT gen_random_uuid(),
    order_id     bigint      NOT NULL REFERENCES orders (id),
    type         text        NOT NULL
                             CHECK (type IN ('order.placed', 'order.cancelled',
                                             'order.status_changed')),
    from_status  text,
    to_status    text        NOT NULL,
    actor        text        NOT NULL CHECK (char_length(actor) BETWEEN 1 AND 100),
    note         text        CHECK (char_length(note) <= 1000),
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    CONSTRAINT order_events_event_id_key UNIQUE (event_id)
);

CREATE INDEX order_events_order_id_idx ON order_events (order_id, id);
CREATE INDEX order_events_unpublished_idx ON order_events (id) WHERE published_at IS NULL;

-- The language the customer ordered in (for the messages about the order) and when the dialog
-- that led to it began (the time from first message to order).
ALTER TABLE orders
    ADD COLUMN locale text,
    ADD COLUMN dialog_started_at timestamptz;

CREATE INDEX orders_status_idx ON orders (status, id);

-- Orders from before this migration get their history, already published (nothing is re-sent).
INSERT INTO order_events (order_id, type, from_status, to_status, actor, created_at, published_at)
SELECT id, 'order.placed', NULL, 'placed', 'customer', created_at, now() FROM orders ORDER BY id;

INSERT INTO order_events (order_id, type, from_status, to_status, actor, created_at, published_at)
SELECT id,
       CASE WHEN status = 'cancelled' THEN 'order.cancelled' ELSE 'order.status_changed' END,
       'placed', status, 'migration', coalesce(cancelled_at, updated_at), now()
FROM orders WHERE status <> 'placed' ORDER BY id;
