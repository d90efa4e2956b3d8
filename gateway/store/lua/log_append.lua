-- The request log: append this event-loop turn's entries to the capped stream.
-- KEYS[1] the stream; ARGV[1] its size; ARGV[2] "1" to trim approximately (whole nodes,
-- cheap), "0" exactly; ARGV[3..] the entries (JSON), oldest first.
local size = ARGV[1]
for i = 3, #ARGV do
  if ARGV[2] == "1" then
    redis.call("XADD", KEYS[1], "MAXLEN", "~", size, "*", "j", ARGV[i])
  else
    redis.call("XADD", KEYS[1], "MAXLEN", size, "*", "j", ARGV[i])
  end
end
return #ARGV - 2
