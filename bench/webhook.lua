-- wrk script: POST Chat2Desk inbox webhooks with unique message ids over 1000 customers.
local counter = 0
local base = tonumber(os.getenv("BENCH_ID_BASE") or "0")
request = function()
  counter = counter + 1
  local body = string.format(
    '{"message_id": %d, "type": "from_client", "hook_type": "inbox", "client_id": %d, ' ..
    '"text": "hello", "transport": "telegram", "channel_id": 17}',
    base + counter, 100000 + (counter % 1000))
  return wrk.format("POST", "/webhook/chat2desk", {["Content-Type"] = "application/json"}, body)
end
