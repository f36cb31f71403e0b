local token = os.getenv("TOKEN")
request = function()
  local i = math.random(0, 999)
  local h = { ["Authorization"] = "Bearer " .. token, ["Sovereign-Purpose"] = "benchmark", ["Content-Type"] = "application/json" }
  return wrk.format("PUT", "/v1/subjects/bench-" .. i .. "/records/profile/main", h, '{"email":"user' .. i .. '@example.com","phone":"+1 555 0100","display_name":"User ' .. i .. '"}')
end
