-- The agent process that was granted the node's current restart hold
-- (Heartbeat.instance): its own later heartbeats, arriving late, must not
-- end the hold; the next process's first heartbeat does. NULL: no hold.
ALTER TABLE nodes ADD COLUMN hold_instance text;
