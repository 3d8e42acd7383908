-- SWUpdate post-install step of the appliance's update bundle (as OE4T's tegra-demo-distro does it):
-- ask UEFI to apply the staged bootloader capsule at the next boot, which updates the other
-- bootloader chain and switches to it (the root filesystem slot follows), and clear the other
-- slot's "unbootable" mark so that UEFI tries it. If the new slot never confirms (appliance
-- update confirm), UEFI or the appliance switch back.
-- TEGRA_SWUPDATE_CAPSULE_INSTALL_PATH of appliance-update.bbclass: keep the two in step.
local capsule = "/boot/efi/EFI/UpdateCapsule/TEGRA_BL.Cap"

local function current_and_other_slot()
    local handle = io.popen("nvbootctrl get-current-slot")
    if not handle then
        return nil, nil
    end
    local current = handle:read("*a"):match("%d")
    handle:close()
    if current == nil then
        return nil, nil
    end
    return current, (current == "1") and "0" or "1"
end

local function file_exists(path)
    local f = io.open(path, "r")
    if f then
        f:close()
        return true
    end
    return false
end

local function clear_unbootable(slot)
    local name = (slot == "1") and "RootfsStatusSlotB" or "RootfsStatusSlotA"
    local value = "\\x00\\x00\\x00\\x00"
    local guid = "781e084c-a330-417c-b678-38e696380cb9"
    local command = string.format('/bin/sh -c ". /usr/bin/uefi_common.func; set_efi_var \'%s\' \'%s\' \'%s\'"',
        name, guid, value)
    local ok, _, code = os.execute(command)
    if ok ~= true then
        print("appliance-update: could not clear the unbootable mark of " .. name .. " (" .. tostring(code) .. ")")
    end
end

function postinst()
    local current, other = current_and_other_slot()
    if current == nil then
        return false, "appliance-update: nvbootctrl get-current-slot failed"
    end
    if not file_exists(capsule) then
        return false, "appliance-update: the bootloader capsule " .. capsule .. " is missing"
    end
    local ok, _, code = os.execute("/usr/bin/oe4t-set-uefi-OSIndications")
    if ok ~= true then
        return false, "appliance-update: oe4t-set-uefi-OSIndications failed (" .. tostring(code) .. ")"
    end
    clear_unbootable(other)
    return true, "appliance-update: capsule staged; slot " .. other .. " is tried at the next boot"
end
