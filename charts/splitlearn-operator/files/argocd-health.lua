-- Argo CD health check for splitlearn.io/SplitModel (gopher-lua, Lua 5.1).
-- Without it Argo CD shows every custom resource as Healthy. Install it in argocd-cm under
-- resource.customizations.health.splitlearn.io_SplitModel (see the chart's README).
local health = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  health.status = "Progressing"
  health.message = "Deleting"
  return health
end

if obj.status == nil then
  health.status = "Progressing"
  health.message = "Waiting for the operator"
  return health
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  health.status = "Progressing"
  health.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return health
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  health.status = "Degraded"
  health.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return health
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  health.status = "Progressing"
  health.message = reconciling.message or reconciling.reason or "Reconciling"
  return health
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  health.status = "Healthy"
  health.message = ready.message or "Ready"
  -- spec.serving: Ready already waits for the trunk server; say when none is serving.
  local serving = condition("Serving")
  if serving ~= nil and serving.status ~= "True" then
    health.message = health.message .. " (Serving: " .. (serving.reason or "False") .. ")"
  end
  return health
end

health.status = "Progressing"
health.message = (ready and ready.message) or "Waiting for the operator"
return health
