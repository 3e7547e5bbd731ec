-- 0001: the orders table (docs/design.md §4, §8).
CREATE TABLE orders (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key     text        NOT NULL,
    client_phone        text        NOT NULL CHECK (client_phone ~ '^\+[1-9][0-9]{6,14}$'),
    delivery_address    text        NOT NULL CHECK (char_length(delivery_address) BETWEEN 1 AND 500),
    quantity            integer     NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    chat2desk_client_id text        NOT NULL,
    status              text        NOT NULL DEFAULT 'new'
                                    CHECK (status IN ('new', 'confirmed', 'delivered', 'cancelled')),
    source              text        NOT NULL DEFAULT 'chat2desk',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_idempotency_key_key UNIQUE (idempotency_key)
);

CREATE INDEX orders_chat2desk_client_id_idx ON orders (chat2desk_client_id);
CREATE INDEX orders_created_at_idx ON orders (created_at);
