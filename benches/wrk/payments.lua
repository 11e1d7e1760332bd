-- wrk script: every request creates and confirms a payment (automatic capture) with its own
-- Idempotency-Key. Set PAYWARDEN_KEY in the environment.
--
-- Keys start with 64 random bits, as clients' keys do (Stripe's SDKs send a UUID v4): they
-- land anywhere in the store's key index, not at its right end. A counter after the prefix
-- keeps them unique.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  key = os.getenv("PAYWARDEN_KEY")
  -- PAYWARDEN_WRK_TAG tells apart wrk processes started in the same second.
  prefix = string.format("bench-%s-%d-%d-", os.getenv("PAYWARDEN_WRK_TAG") or "", os.time(), thread_id)
  math.randomseed(os.time() + thread_id)
end

function request()
  counter = counter + 1
  local headers = {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Idempotency-Key"] = string.format("%08x%08x-", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
      .. prefix .. counter,
  }
  local body = "amount=" .. (1000 + counter % 5000) .. "&currency=usd&payment_method=pm_card_visa&confirm=true"
  return wrk.format("POST", "/v1/payment_intents", headers, body)
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
end
