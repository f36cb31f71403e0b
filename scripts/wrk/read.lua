local token = os.getenv("TOKEN")
local newpurpose = os.getenv("NEWPURPOSE")
local n = 0
request = function()
  n = n + 1
  local i = math.random(0, 999)
  local h = { ["Authorization"] = "Bearer " .. token, ["Sovereign-Purpose"] = "benchmark" }
  if newpurpose then h["Sovereign-Purpose"] = "benchmark-" .. n .. "-" .. math.random(1, 1000000000) end
  return wrk.format("GET", "/v1/subjects/bench-" .. i .. "/records/profile/main", h)
end
