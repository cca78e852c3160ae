-- luacheck: globals module
-- Works around a bug of Prosody 0.12's mod_smacks for the reliability
-- specs: on <resume/> it moves the hibernating session onto the new
-- connection, but the connection's bytes still go to session.data of the
-- *old* connection, which feeds the old connection's XML parser. When the
-- old link died in the middle of a stanza (what the fault proxy does), that
-- parser holds half a stanza, the first bytes of the new connection make it
-- "not well-formed", and the resumed session is killed. (Earlier versions
-- of mod_smacks replaced session.data; this puts that back.) lxmpp copes
-- without it -- the session ends and its unacknowledged stanzas are
-- reported -- but then resumption does not succeed, and the specs show
-- that it does.
module:hook("smacks-hibernation-end", function(event)
  local new, resumed = event.origin, event.resumed
  if new and resumed and new.data then
    resumed.data = new.data
  end
end)
